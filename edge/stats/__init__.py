"""The statistics the device reports and the acceptance gate it applies (numpy only)."""
