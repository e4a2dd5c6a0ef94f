"""Drop repeated inline <script> blocks from every page.

sphinx-thebe registers its inline configuration script (``const THEBE_JS_URL = ...``) in a
way that Sphinx 7 renders twice; the second copy throws "Identifier 'THEBE_JS_URL' has
already been declared" in the browser. Inline scripts have no file name to deduplicate by,
so we compare their text.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        # Sphinx records an inline script's file name as None or "" depending on the path
        # that added it, so both count as "no file".
        name = getattr(script, "filename", str(script)) or ""
        key = (name, str(getattr(script, "attributes", {})))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
