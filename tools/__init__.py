"""Tools run from the repository: CI upload, IAM checks, the AWS smoke test."""
