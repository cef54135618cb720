"""busbra dataset."""
