"""Example clients of the running platform (``python -m Prod.examples.main_example_als``)."""
