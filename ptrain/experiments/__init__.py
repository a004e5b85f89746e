"""Several runs: `ptrain sweep` and the `ptrain runs` table."""
