"""Data: the farm-events/1 format, its validation, the simulator, importers and sample building."""
