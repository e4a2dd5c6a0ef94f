"""Tests of tinyformer.plot: each helper returns axes with what it promises, and refuses
what it cannot draw."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tinyformer.plot import plot_attention, plot_loss_curve  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_attention_heatmap_has_labels_scale_and_colorbar():
    weights = torch.softmax(torch.randn(3, 4), dim=-1)
    ax = plot_attention(weights, ["a", "b", "c", "d"], ["x", "y", "z"], title="head 1")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x", "y", "z"]
    assert ax.get_title() == "head 1"
    image = ax.get_images()[0]
    assert image.get_clim() == (0.0, 1.0)  # comparable across heatmaps
    np.testing.assert_allclose(image.get_array(), weights.numpy(), rtol=1e-6)
    assert len(ax.figure.axes) == 2  # the heatmap and its colorbar


def test_attention_heatmap_edge_cases():
    ax = plot_attention(torch.ones(1, 1), ["only"], ["only"])  # one token
    assert ax.get_images()[0].get_array().shape == (1, 1)
    _, given = plt.subplots()
    assert plot_attention(np.zeros((2, 2)), ["a", "b"], ["a", "b"], ax=given) is given
    with pytest.raises(ValueError, match=r"\(T_q, T_k\), got shape \(2, 2, 2\)"):
        plot_attention(torch.zeros(2, 2, 2), ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match=r"expected 3 x_labels \(keys\) and 2 y_labels"):
        plot_attention(torch.zeros(2, 3), ["a", "b"], ["a", "b"])


def test_loss_curve_draws_curves_and_the_limit_once():
    ax = plot_loss_curve([0, 1, 2], [3.0, 2.0, 1.5], limit=1.2, label="train")
    plot_loss_curve([0, 2], [3.1, 1.7], limit=1.2, ax=ax, label="validation")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train", "limit 1.200", "validation"]
    assert ax.get_xlabel() == "training step" and "nats" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train", "limit 1.200", "validation",
    ]  # fmt: skip


def test_loss_curve_edge_cases():
    ax = plot_loss_curve(torch.arange(1), torch.ones(1))  # one point, no limit, no label
    assert len(ax.get_lines()) == 1 and ax.get_legend() is None
    with pytest.raises(ValueError, match=r"equal length, got shapes \(3,\) and \(2,\)"):
        plot_loss_curve([0, 1, 2], [1.0, 2.0])
