"""Infrastructure as code for the pipeline's AWS account, and its checks."""
