"""The `tritonrag` command and the embedded launcher; may import everything below."""
