"""The measuring stick: holefs against kernel tmpfs, run with `python -m bench`."""
