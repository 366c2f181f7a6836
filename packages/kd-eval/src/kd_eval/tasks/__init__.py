"""Task metrics: classification (any label set, e.g. the Magic 8-Ball) and tool calls."""
