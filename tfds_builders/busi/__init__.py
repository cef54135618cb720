"""busi dataset."""
