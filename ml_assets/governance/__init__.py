"""Data protection: erasing one customer from every store, and the retention job."""
