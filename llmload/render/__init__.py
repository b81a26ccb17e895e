"""The render layer: results documents in, text tables, HTML, SVG charts and comparisons out.

Nothing here imports Locust, gevent or prometheus_client (a test runs
``llmload report`` and ``llmload compare`` in a fresh interpreter and checks
it): rendering a saved results file needs only the file. The modules:

* ``document``: the results schemas, reading a file, upgrading version 1;
* ``text``: shared text pieces (the SLO sentence, fixed-width tables, labels);
* ``table``: the end-of-run console table;
* ``capacity``: the capacity search's table and answer line;
* ``soak``: the soak verdict's console block and compare cell (docs/soak.md);
* ``svg`` and ``charts``: inline SVG charts;
* ``html``: the self-contained HTML report;
* ``compare``: the cross-run comparison (Markdown, CSV).
"""
