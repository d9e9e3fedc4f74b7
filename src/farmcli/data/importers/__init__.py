"""Importers: public datasets -> the farm-events/1 format (DATA_FORMAT.md)."""

from farmcli.data.importers.kuailive_m3 import ImportReport, KLM3Options, import_kuailive_m3

__all__ = ["ImportReport", "KLM3Options", "import_kuailive_m3"]
