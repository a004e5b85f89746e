"""The bottom layer: atomic writes, integrity manifests, leftovers of interrupted writes, the run lock. Imports
nothing of ptrain but its errors."""
