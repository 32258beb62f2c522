"""The ground floor: the chunk format, the Zarr codec and AAC encoding and decoding.

Nothing here imports the file adapter, the archive or the xarray layer.
"""

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.codec.chunk_format import FrameIndex
from zarr_aac.codec.tolerant import tolerant_reads

__all__ = ["AACCodec", "FrameIndex", "tolerant_reads"]
