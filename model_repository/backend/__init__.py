"""Model code Triton runs (python backend); it imports nothing of ours."""
