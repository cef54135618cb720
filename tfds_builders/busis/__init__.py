"""busis dataset."""
