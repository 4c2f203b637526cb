print("bench-kernels: not yet")
