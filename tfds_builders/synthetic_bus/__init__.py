"""synthetic_bus: procedural breast-ultrasound images (the busjax default dataset)."""
