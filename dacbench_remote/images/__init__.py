"""Images: the catalog, the cache with verified downloads, SIF reading and building."""
