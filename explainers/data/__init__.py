"""Built-in datasets (made by the project's own code), image folders and image loading."""
