{% for a in range(100000) %}{% set s = 'x' * 99999999 %}{% endfor %}
a: 1
