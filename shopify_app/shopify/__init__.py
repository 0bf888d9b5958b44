"""Everything that speaks Shopify: OAuth, session tokens, webhook verification, the GraphQL client (throttling,
retries, bulk operations). `.graphql` documents live in documents/ so one test validates them all against the
official Admin schema."""
