"""Triton model repositories (cpu/, gpu/) and the model code they run (backend/)."""
