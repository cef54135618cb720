"""udiat_b dataset."""
