"""Graph analytics: degrees, PageRank, components, communities."""
