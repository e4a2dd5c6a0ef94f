"""Draw the course's architecture map for the intro page: book/figures/architecture.png.

Three models built from the same parts, one per part of the course:

- Part I, the decoder (GPT-style): causal self-attention, a language-model head;
- Part II, the encoder (BERT-style): self-attention over every position, a masked-LM
  head or a classifier;
- Part III, the encoder-decoder (the 2017 transformer): an encoder stack whose output, the
  memory, feeds the cross attention of every decoder block.

Plain matplotlib boxes and arrows, like the diagram of Chapter 9. Run from the repository
root:

    .venv/bin/python scripts/make_architecture.py

It writes the PNG at 200 dpi; commit the PNG with the script.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "book" / "figures" / "architecture.png"

COLORS = {
    "embed": "#d9f0d3",
    "self": "#fde0c5",
    "cross": "#f6b8b8",
    "ffn": "#cfe3f7",
    "norm": "#e4e4e4",
    "head": "#e5d8f0",
}
MEMORY_RED = "#b22222"
BOX_W = 4.9  # width of every box (data units)
BOX_H = 0.8  # height of a box
GAP = 0.45  # vertical space between boxes (holds an arrow)
FONT = 13.5  # labels: about 9.5 px when the ~14 in wide PNG is shown 700 px wide


def box(ax, cx, y, label, color, h=BOX_H, bold=False, fontsize=FONT):
    """A rounded box of width BOX_W, centred on cx, bottom at y; returns its top."""
    ax.add_patch(
        FancyBboxPatch(
            (cx - BOX_W / 2, y),
            BOX_W,
            h,
            boxstyle="round,pad=0,rounding_size=0.15",
            fc=color,
            ec="black",
            lw=1.2,
            zorder=2,
        )
    )
    ax.text(
        cx,
        y + h / 2,
        label,
        ha="center",
        va="center",
        fontsize=fontsize,
        fontweight="bold" if bold else "normal",
        zorder=3,
    )
    return y + h


def arrow(ax, start, end, color="black", lw=1.5):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=14,
            color=color,
            lw=lw,
            zorder=3,
            shrinkA=0,
            shrinkB=0,
        )
    )


def up(ax, cx, y):
    """An arrow up from y to the next box; returns where that box starts."""
    arrow(ax, (cx, y), (cx, y + GAP))
    return y + GAP


def stack(ax, cx, y, sublayers, label, side=-1):
    """N blocks drawn as one dashed frame around their sublayers, marked 'N x'.

    ``sublayers`` is a list of (label, colour). Returns (the frame's top, {label: middle y}).
    """
    pad = 0.25
    y0 = y
    y += pad
    middles = {}
    for i, (name, color) in enumerate(sublayers):
        if i:
            y = up(ax, cx, y)
        middles[name] = y + BOX_H / 2
        y = box(ax, cx, y, name, color)
    y += pad
    ax.add_patch(
        FancyBboxPatch(
            (cx - BOX_W / 2 - 0.3, y0),
            BOX_W + 0.6,
            y - y0,
            boxstyle="round,pad=0,rounding_size=0.2",
            fc="none",
            ec="#666666",
            lw=1.2,
            ls="--",
            zorder=1,
        )
    )
    ax.text(
        cx + side * (BOX_W / 2 + 0.45),
        (y0 + y) / 2,
        label,
        ha="right" if side < 0 else "left",
        va="center",
        fontsize=FONT,
        color="#444444",
    )
    return y, middles


def column(ax, cx, bottom_text, sublayers, top_boxes, top_text=None, side=-1):
    """One stack: ids -> embedding + positions -> N blocks -> top boxes -> output text.

    Returns ({sublayer label: middle y}, {top box label: (bottom y, top y)}, top y).
    """
    ax.text(cx, 0.0, bottom_text, ha="center", va="center", fontsize=FONT)
    y = up(ax, cx, 0.3)
    y = box(ax, cx, y, "token embedding\n+ positions", COLORS["embed"], h=1.05)
    y = up(ax, cx, y)
    y, middles = stack(ax, cx, y, sublayers, "N ×", side)
    spans = {}
    for label, color, bold in top_boxes:
        y = up(ax, cx, y)
        bottom = y
        y = box(ax, cx, y, label, color, bold=bold)
        spans[label] = (bottom, y)
    if top_text is not None:
        arrow(ax, (cx, y), (cx, y + GAP))
        ax.text(cx, y + GAP + 0.3, top_text, ha="center", va="center", fontsize=FONT)
        y += GAP + 0.6
    return middles, spans, y


def draw_architecture(ax):
    x_dec, x_enc, x3_enc, x3_dec = 2.9, 10.2, 17.5, 25.1
    _, _, top1 = column(
        ax,
        x_dec,
        "token ids  <bos> w₁ … wₙ",
        [("causal self-attention", COLORS["self"]), ("feed-forward", COLORS["ffn"])],
        [("final LayerNorm", COLORS["norm"], False), ("LM head", COLORS["head"], False)],
        "next-token probabilities",
    )
    _, _, top2 = column(
        ax,
        x_enc,
        "token ids, some <mask>",
        [("full self-attention", COLORS["self"]), ("feed-forward", COLORS["ffn"])],
        [
            ("final LayerNorm", COLORS["norm"], False),
            ("MLM head or classifier", COLORS["head"], False),
        ],
        "masked words or a class",
    )
    _, spans, _ = column(
        ax,
        x3_enc,
        "source ids",
        [("full self-attention", COLORS["self"]), ("feed-forward", COLORS["ffn"])],
        [("final LayerNorm", COLORS["norm"], False), ("memory", COLORS["cross"], True)],
    )
    middles, _, top3 = column(
        ax,
        x3_dec,
        "target ids  <bos> y₁ … yₘ",
        [
            ("causal self-attention", COLORS["self"]),
            ("cross-attention", COLORS["cross"]),
            ("feed-forward", COLORS["ffn"]),
        ],
        [("final LayerNorm", COLORS["norm"], False), ("LM head", COLORS["head"], False)],
        "next target word",
        side=+1,
    )

    # The memory feeds the cross attention of every decoder block: keys and values.
    bottom, top = spans["memory"]
    y_mem = (bottom + top) / 2
    y_cross = middles["cross-attention"]
    bus_x = (x3_enc + x3_dec) / 2
    ax.plot([x3_enc + BOX_W / 2, bus_x, bus_x], [y_mem, y_mem, y_cross], color=MEMORY_RED, lw=2.4)
    arrow(ax, (bus_x, y_cross), (x3_dec - BOX_W / 2, y_cross), color=MEMORY_RED, lw=2.4)
    ax.text(
        bus_x - 0.15,
        (y_mem + y_cross) / 2,
        "keys, values",
        color=MEMORY_RED,
        fontsize=FONT - 1,
        rotation=90,
        ha="right",
        va="center",
    )

    # Part titles, and a shaded background that groups Part III's two stacks.
    top_y = max(top1, top2, top3) + 1.3
    ax.add_patch(
        FancyBboxPatch(
            (x3_enc - BOX_W / 2 - 1.3, -0.5),
            x3_dec - x3_enc + BOX_W + 2.6,
            top_y + 0.2,
            boxstyle="round,pad=0,rounding_size=0.3",
            fc="#f5f5f5",
            ec="none",
            zorder=0,
        )
    )
    titles = [
        (x_dec, "Part I: the decoder", "GPT-style language model"),
        (x_enc, "Part II: the encoder", "BERT-style, sees both sides"),
        ((x3_enc + x3_dec) / 2, "Part III: encoder-decoder", "joined by cross attention"),
    ]
    for x, title, subtitle in titles:
        ax.text(x, top_y - 0.1, title, ha="center", va="center", fontsize=FONT + 2.5,
                fontweight="bold")  # fmt: skip
        ax.text(x, top_y - 0.75, subtitle, ha="center", va="center", fontsize=FONT,
                style="italic")  # fmt: skip
    ax.set_xlim(-1.0, 29.4)
    ax.set_ylim(-0.6, top_y + 0.4)
    ax.set_aspect("equal")
    ax.axis("off")


def main() -> None:
    fig, ax = plt.subplots(figsize=(14, 6.2))
    draw_architecture(ax)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=200, bbox_inches="tight", facecolor="white")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
