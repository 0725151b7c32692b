"""Where artifacts live: the content-addressed cache (``cache``), sharded per-sample tables
(``tables``), paths/URIs (``fsutil``) and the one-run-per-output-directory lock (``lock``)."""
