"""verl glue: the only package (with ``rftt_plugin.cpu``) that imports verl."""
