require ["fileinto", "variables"];
if header :matches "subject" "* there" { set "word" "${1}"; fileinto "Box-${word}"; }
