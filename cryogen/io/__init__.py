"""Files: MRC reading and writing, the Zarr tile store, OME-Zarr export, atomic outputs."""
