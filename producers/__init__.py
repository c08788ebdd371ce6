"""Services that write queries and labels: the async QueryClient, the feedback producer, and
the load generator of `fi-stream bench e2e` (`producers.load`)."""
