"""The recipes bundled with mvtools (package data ``mvtools.pipelines``): ``mvtools recipes`` lists them."""
