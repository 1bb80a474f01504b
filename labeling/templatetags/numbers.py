"""Template filters printing numbers as the pages' scripts do (labeling.web.formatting)."""

from django import template

from labeling.web.formatting import fixed3, share3, signed3

register = template.Library()
register.filter("fixed3", fixed3)
register.filter("signed3", signed3)
register.filter("share3", share3)
