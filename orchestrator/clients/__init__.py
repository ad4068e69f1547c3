"""Adapters to the services tritonrag talks to."""
