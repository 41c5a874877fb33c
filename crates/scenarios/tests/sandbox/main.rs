//! lifeboat-scenarios' integration tests: the sandboxes start real servers.

mod opensearch;
