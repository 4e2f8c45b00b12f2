# The part of nixpkgs' `lib` that Myco's flake, its NixOS module and the `myco init` templates use,
# written from builtins so that tests evaluate them offline. Option types are records with a
# `check` function, enough for `tests/nix/eval-module.nix` to refuse a value of the wrong type the
# way the real module system does; merging, priorities and submodules are not modelled.
let
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  type = name: check: { inherit name check; };
in
{
  inherit genAttrs;
  cleanSource = src: src;
  cleanSourceWith = { src, ... }: src;
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  licenses.asl20 = { spdxId = "Apache-2.0"; };
  platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = description: {
    _type = "option";
    type = type "bool" builtins.isBool;
    default = false;
    description = "Whether to enable ${description}.";
  };
  mkPackageOption = _pkgs: name: _extra: {
    _type = "option";
    type = type "package" builtins.isAttrs;
    description = "The ${name} package to use.";
  };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  optional = condition: value: if condition then [ value ] else [ ];
  optionals = condition: values: if condition then values else [ ];
  types = {
    bool = type "bool" builtins.isBool;
    str = type "str" builtins.isString;
    path = type "path" (v: builtins.isPath v || builtins.isString v);
    package = type "package" builtins.isAttrs;
    port = type "port" (v: builtins.isInt v && v >= 0 && v <= 65535);
    strMatching = pattern: type "strMatching ${pattern}"
      (v: builtins.isString v && builtins.match pattern v != null);
    enum = values: type "enum" (v: builtins.elem v values);
    listOf = elem: type "listOf ${elem.name}" (v: builtins.isList v && builtins.all elem.check v);
    nullOr = elem: type "nullOr ${elem.name}" (v: v == null || elem.check v);
  };
}
