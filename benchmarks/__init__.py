"""Speed and memory benchmarks; each script's docstring gives its commands."""
