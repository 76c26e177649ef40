"""The trainer: streams clips from an mvtools store into PyTorch and pretrains video representations.

It reads stores only through their documented zarr layout (see README, "Store layout").
"""
