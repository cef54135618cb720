"""stu_hospital dataset."""
