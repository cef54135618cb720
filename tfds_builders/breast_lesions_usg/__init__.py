"""breast_lesions_usg dataset."""
