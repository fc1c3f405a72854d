"""Images: the catalog, the cache with verified downloads, SIF reading and writing, recipes and the
builders. Nothing here knows of runtimes, episodes or trials."""
