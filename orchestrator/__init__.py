"""tritonrag: retrieval-augmented generation around NVIDIA Triton Inference Server."""
