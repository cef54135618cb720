"""bus_uclm dataset."""
