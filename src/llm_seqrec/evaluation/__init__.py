"""One evaluation protocol for every model: ranks of targets, then metrics from ranks."""
