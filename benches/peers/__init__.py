"""Peer-loader benchmark (scripts/bench-peers): shardstream vs MosaicML Streaming, LitData,
WebDataset and torch DataLoader + pyarrow on one logical dataset; see run.py."""
