"""The reading side: analysis of result rows (never imports the measuring side)."""
