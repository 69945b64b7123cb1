#!jinja|yaml
{% set x = salt["pillar.get"]("a") %}
makina-projects.x:
  data: {{ x }}
  list: [1, 2]
