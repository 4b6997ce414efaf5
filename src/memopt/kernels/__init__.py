"""Fused C kernels for updates that torch has no single-pass kernel for, built on first use."""
