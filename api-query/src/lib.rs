//! Label and field selectors, and server-side Table printing of Kubernetes objects.
