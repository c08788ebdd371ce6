"""Services that write queries and labels: the async QueryClient and the feedback producer
(the load generator is `fi-stream bench e2e`)."""
