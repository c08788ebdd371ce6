"""Services that write queries and labels: the async QueryClient and the feedback producer."""
