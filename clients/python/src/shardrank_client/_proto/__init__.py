"""gRPC stubs generated from proto/ by scripts/gen-python-stubs (do not edit).

The generated files are registered in POOL, this package's own descriptor pool, so they never clash
with other copies of the same protos in protobuf's default pool.
"""
from google.protobuf import descriptor_pool as _descriptor_pool

POOL = _descriptor_pool.DescriptorPool()
