"""Reports: before/after tables as markdown and JSON."""
