"""Where artifacts live: the content-addressed cache (``cache``) and paths/URIs (``fsutil``)."""
