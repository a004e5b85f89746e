"""The process and its device: precision, the Accelerator and its engine (DDP, FSDP2, DeepSpeed), nodes, lost
peers, the allocator, memory, hardware facts and what every process must agree on. Used by training, inference
and bench alike; imports nothing above config."""
